"""Dock widgets (Qt/magicgui only): one file per widget; they import the core, never the reverse."""
