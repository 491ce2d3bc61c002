"""Loading and running: arguments checked once, the router, the crash guard, fitting, the
session."""
