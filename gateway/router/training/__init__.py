"""Offline side of the router: load labelled data, fit and adapt artifacts, evaluate and compare.

Nothing here runs per request; serving (``gateway.router``) never imports it. Training needs scipy.
"""
