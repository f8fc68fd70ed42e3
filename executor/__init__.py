"""meshcast executor: runs a `meshcast.plan/v1` inside a torch.distributed job (DESIGN §5).

Not implemented yet: the package is reserved so that installs and imports stay stable.
"""
