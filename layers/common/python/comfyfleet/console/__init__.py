"""The web console's page and assets (plain ES modules and CSS, no build step), served by
the API at /console (comfyfleet.api.console_routes; docs/console.md)."""
