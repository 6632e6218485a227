from mcp_prism.cli import main

raise SystemExit(main())
