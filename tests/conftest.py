import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOY = os.path.join(ROOT, "configs", "toy_maml_trpo.yaml")


@pytest.fixture
def toy_config():
    return TOY
