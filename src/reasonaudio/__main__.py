"""`python -m reasonaudio` = the `reasonaudio` console script."""
from reasonaudio.cli import main

main()
