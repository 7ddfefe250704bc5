"""The ``fsapp`` commands, one file each."""
