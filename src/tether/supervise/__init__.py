"""tether.supervise"""
