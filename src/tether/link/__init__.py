"""tether.link"""
