"""The banking deployment: accounts, transfers, compliance and the audit trail (fraud is in ``common``)."""

import podium
from services.banking.accounts import accounts
from services.banking.audit import audit
from services.banking.compliance import compliance, limits
from services.banking.transfers import money_transfers, transfers

SERVICES = [accounts, audit, transfers, money_transfers, compliance, limits]

app = podium.app(services=SERVICES)
