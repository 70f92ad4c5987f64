"""Dock widgets (Qt/magicgui only); each file is one widget and imports the core, never the reverse."""
