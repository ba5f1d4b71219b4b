from mrl_core.cli import main

raise SystemExit(main())
