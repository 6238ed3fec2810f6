import sys

from keras_sam3.cli import main

sys.exit(main())
