"""tether.service"""
