"""winipc's core: names, namespace, security, handles, spawning. No mechanism lives here."""
