"""The stage configs, installed as package data of ``reasonaudio.lightning_configs``.

The folder stays at the top of the checkout (``make`` targets and users name ``lightning_configs/<stage>.yaml``);
``setup.cfg`` maps it into the package so that ``reasonaudio.cli.CONFIG_DIR`` finds the same files from a wheel or a
non-editable install.
"""
