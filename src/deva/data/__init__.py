"""deva.data"""
