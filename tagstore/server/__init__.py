"""The resident server and the web page it serves."""
