"""The API's routers, one module per resource; ``dicomnode.admin.app`` mounts them."""
