"""Runs over whole videos and datasets: inputs, the tracker or propagator, output formats."""
