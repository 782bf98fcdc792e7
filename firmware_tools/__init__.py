"""Tools for the device's life outside the field: provisioning now, signed updates later."""
