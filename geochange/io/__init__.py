"""The edges that touch files: opening stacks and reading windows, writing rasters and GeoPackages."""
