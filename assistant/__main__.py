import sys

from assistant.cli import main

if __name__ == "__main__":  # the text-extraction process imports this module too
    sys.exit(main())
