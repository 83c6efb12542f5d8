"""deva.metrics"""
