"""Bounds on test task arguments, shared by the API (422) and the tasks (checked again)."""

MAX_SLEEP_SECONDS = 60
MAX_STAGE_SECONDS = 12.0
DEFAULT_STAGE_SECONDS = 2.0
# Operands of test.add stay exact in JavaScript clients' numbers.
MAX_ADD_OPERAND = 2**53
