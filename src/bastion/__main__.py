"""``python -m bastion`` runs the command-line interface."""

from bastion.cli.main import main

raise SystemExit(main())
