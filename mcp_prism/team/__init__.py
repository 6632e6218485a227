"""Team scale: virtual API keys (`keys.py`) and budgets with their enforcement ledger (`budgets.py`)."""
