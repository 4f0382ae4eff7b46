from kdforge.cli import main

raise SystemExit(main())
