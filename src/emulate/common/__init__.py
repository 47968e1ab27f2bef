"""What every system uses: errors, command-line plumbing, progress bars, plots, world caching."""
