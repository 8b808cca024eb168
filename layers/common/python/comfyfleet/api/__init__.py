"""The HTTP API (DESIGN §8): request and response models, the authorizer's logic, the routes
behind the api function, the one exception → status mapping, and a local adapter that turns
plain HTTP requests into API Gateway proxy events.

Importing this package is free; the modules below are loaded by whoever needs them (the
Lambda entry points build the application on their first request).
"""
