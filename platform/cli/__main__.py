import sys

from pagefleet.platform.cli import main

sys.exit(main())
