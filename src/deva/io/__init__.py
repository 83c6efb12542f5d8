"""deva.io"""
