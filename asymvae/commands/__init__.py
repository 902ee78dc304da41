"""One module per `asymvae` subcommand; each exposes `register(subparsers)`."""
