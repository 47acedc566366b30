"""Reporting: figures and tables drawn from results files, the notebooks' helpers and widgets, the notebook runner."""
