"""tether.observe"""
