"""Analysis: collapse probability, finite-d Monte Carlo, phase diagrams, figures, command line."""
