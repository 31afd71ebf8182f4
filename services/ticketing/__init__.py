"""Event ticketing (seed 003, exercise 3): seats held for 15 minutes, payment, tickets by email."""
