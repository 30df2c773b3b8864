"""tether.recovery"""
