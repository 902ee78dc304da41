"""`python -m asymvae` is the `asymvae` command."""

from asymvae.cli import main

if __name__ == "__main__":
    main()
