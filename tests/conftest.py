pytest_plugins = ("tests.fix_backends",)
