from genrec.cli import main

raise SystemExit(main())
