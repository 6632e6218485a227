"""Import the usage that coding agents logged on this machine (`mcp-prism import-history`).

One small parser per agent turns its local logs into `LoggedRequest`s (`claude_code.py`, `opencode.py`,
`codex.py`); `service.py` classifies, prices and stores them, remembering how far each log was read.
"""
