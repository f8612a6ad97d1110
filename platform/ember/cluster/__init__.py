"""The local Ray cluster that `ember up` runs, and the Serve configs it deploys."""
