"""One module per workbench panel."""
