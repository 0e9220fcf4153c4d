from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from fraud_detection.data.contract import Contract, DType, Role, load_contract
from fraud_detection.errors import ConfigError
from tests.conftest import CONTRACTS_DIR

pytestmark = pytest.mark.unit


def _raw(name: str) -> dict:
    return yaml.safe_load((CONTRACTS_DIR / f"{name}.yaml").read_text())


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "contract.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_contracts_declare_keys_roles_and_exclusions(simulator_contract, handbook_contract):
    for contract in (simulator_contract, handbook_contract):
        assert contract.entity_columns == {"customer": "customer_id", "terminal": "terminal_id"}
        assert contract.columns_with_role(Role.ID) == ["transaction_id"]
        assert contract.columns_with_role(Role.TIMESTAMP) == ["event_timestamp"]
        assert contract.columns_with_role(Role.LABEL) == ["is_fraud"]
        # Simulator ground truth is never a model input.
        assert "fraud_scenario" in contract.never_model_inputs
        assert "fraud_scenario" not in contract.model_input_candidates
    assert simulator_contract.columns_with_role(Role.PROTECTED) == ["customer_age_band"]


def test_handbook_contract_maps_the_handbook_layout_onto_canonical_names(handbook_contract):
    mapping = handbook_contract.source_to_canonical
    assert mapping["TX_DATETIME"] == "event_timestamp"
    assert mapping["TX_FRAUD"] == "is_fraud"
    assert mapping["TX_FRAUD_SCENARIO"] == "fraud_scenario"
    assert mapping["TX_AMOUNT"] == "amount"
    assert {c.name: c.dtype for c in handbook_contract.columns}["amount"] == DType.FLOAT64


def test_unknown_contract_name_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"'nope' not found.*\['handbook', 'simulator'\]"):
        load_contract("nope", CONTRACTS_DIR)


def test_contract_can_be_loaded_from_an_explicit_path(tmp_path):
    contract = load_contract(_write(tmp_path, _raw("simulator")), CONTRACTS_DIR)
    assert isinstance(contract, Contract)
    assert contract.name == "simulator"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw["columns"].pop(0), "canonical column 'transaction_id'"),
        (lambda raw: raw["columns"].append(copy.deepcopy(raw["columns"][4])), "names must be unique"),
        (lambda raw: raw["columns"][2].update(entity="card"), "must be named 'card_id'"),
        (lambda raw: raw["columns"][4].update(min=10, max=1), "min 10.0 is above max 1.0"),
        (lambda raw: raw["columns"][4].update(role="input"), "columns.4.role='input'"),
        (lambda raw: raw["columns"][4].update(dtype="decimal"), "columns.4.dtype='decimal'"),
        (lambda raw: raw["columns"][5].update(role="feature"), "column 'is_fraud' must have role label"),
        (lambda raw: raw.update(colums=[]), "colums"),
        (lambda raw: raw["quality"]["volume"].update(tolerance=-1), "quality.volume.tolerance=-1"),
        (lambda raw: raw["quality"]["referential"][0].update(column="card"), "unknown column 'card'"),
        (lambda raw: raw["columns"][7].update(pattern="([a-"), "is not a valid regex"),
        (lambda raw: raw["columns"][5].update(allowed=["0", "1"]), "do not match dtype int64"),
        (lambda raw: raw["columns"][1].update(nullable=True), "a timestamp column cannot be nullable"),
    ],
)
def test_invalid_contracts_are_rejected_with_the_field_and_value(tmp_path, mutate, message):
    raw = _raw("simulator")
    mutate(raw)
    with pytest.raises(ConfigError) as excinfo:
        load_contract(_write(tmp_path, raw), CONTRACTS_DIR)
    assert message in str(excinfo.value)
    assert "contract.yaml" in str(excinfo.value)


def test_non_mapping_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "contract.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping, got list"):
        load_contract(path, CONTRACTS_DIR)
