"""deva.config"""
