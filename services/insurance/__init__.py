"""Insurance claim processing (seed 003 ex 5): ``ClaimSaga``, the policy catalogue, the records provider."""
