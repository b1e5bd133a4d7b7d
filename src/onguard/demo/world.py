"""Builds the guarded world on a local chain: a Safe v1.4.1 (2-of-3), the GuardianModule and the demo protocol,
wired as a protocol team would wire them. Used by `onguard demo`, the tests' base chain and the benchmarks."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from safe_eth.eth import EthereumClient
from safe_eth.eth.constants import NULL_ADDRESS
from safe_eth.eth.contracts import get_multi_send_call_only_V1_4_1_contract, get_safe_V1_4_1_contract
from safe_eth.safe import Safe
from safe_eth.safe.proxy_factory import ProxyFactoryV141
from safe_eth.safe.safe import SafeV141
from web3 import Web3
from web3.contract import Contract

from onguard.chain.anvil import DEV_MNEMONIC
from onguard.errors import ToolchainError
from onguard.paths import ARTIFACTS_DIR, POLICIES_DIR
from onguard.safe.tx import MULTISEND_CALL_ONLY

Account.enable_unaudited_hdwallet_features()

TOKEN = 10**18
# Safe's singleton factory (a CREATE2 deployer: salt ‖ init code), through which Safe deployed its v1.4.1 contracts
# at the same address on every chain. Its code is that of the well-known deterministic-deployment proxy.
SAFE_SINGLETON_FACTORY = "0x914d7Fec6aaC8cd542e72Bca78B30650d45643d7"
SINGLETON_FACTORY_CODE = ("0x7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffe036016000816020823780"
                          "35828234f58015156039578182fd5b8082525050506014600cf3")
SAFE_SALT = 0x0C6A4D
ACTION_COOLDOWN = 3600  # seconds between two executions of one guardian action on chain


@cache
def dev_account(index: int) -> LocalAccount:
    """Anvil's public development keys: test chains only."""
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


class Roles:
    DEPLOYER = 0
    OWNERS = (1, 2, 3)
    GUARDIAN = 4
    ATTACKER = 5
    DEPOSITORS = (6, 7, 8)
    ORACLE_UPDATER = 9


@dataclass(frozen=True, slots=True)
class World:
    rpc_url: str
    chain_id: int
    safe: str
    module: str
    asset: str
    collateral: str
    oracle: str
    breaker: str
    vault: str
    owners: tuple[str, ...]
    guardian: str
    threshold: int = 2

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> World:
        data = json.loads(text)
        data["owners"] = tuple(data["owners"])
        return cls(**data)

    def at(self, rpc_url: str) -> World:
        """The same world seen through another endpoint (a fork of the chain it was deployed on)."""
        return World(**{**asdict(self), "rpc_url": rpc_url})


def artifact(name: str) -> dict[str, Any]:
    path = ARTIFACTS_DIR / f"{name}.sol" / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ToolchainError(f"compiled contract {name} not found at {path}",
                             hint="run ./onguard or ./run-tests once: they compile the contracts with forge") from None


def contract(w3: Web3, name: str, address: str) -> Contract:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=artifact(name)["abi"])


def transact(w3: Web3, call: Any, sender: str) -> Any:
    """Sends from one of Anvil's unlocked dev accounts and insists on success."""
    tx_hash = call.transact({"from": sender})
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {tx_hash.hex()} reverted")
    return receipt


def deploy(w3: Web3, name: str, *args: Any) -> Contract:
    build = artifact(name)
    factory = w3.eth.contract(abi=build["abi"], bytecode=build["bytecode"]["object"])
    receipt = transact(w3, factory.constructor(*args), dev_account(Roles.DEPLOYER).address)
    return w3.eth.contract(address=receipt["contractAddress"], abi=build["abi"])


def exec_as_owners(client: EthereumClient, safe_address: str, to: str, data: bytes,
                   signer_indexes: tuple[int, ...] = Roles.OWNERS[:2]) -> None:
    """An ordinary multisig transaction: threshold owners sign the Safe tx hash, the deployer relays it."""
    safe = Safe(safe_address, client)  # type: ignore[abstract]
    safe_tx = safe.build_multisig_tx(to, 0, data)
    for index in signer_indexes:
        safe_tx.sign(dev_account(index).key.to_0x_hex())
    tx_hash, _ = safe_tx.execute(dev_account(Roles.DEPLOYER).key.to_0x_hex())
    receipt = client.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise RuntimeError(f"Safe transaction to {to} failed")


def build_world(rpc_url: str, *, deposits: tuple[int, ...] = (400_000, 300_000, 300_000),
                guardian: str | None = None, owner_indexes: tuple[int, ...] = Roles.OWNERS,
                threshold: int = 2) -> World:
    """`owner_indexes` (dev account indexes) and `threshold` shape the Safe: 2 of Roles.OWNERS by default."""
    client = EthereumClient(rpc_url)
    w3 = client.w3
    deployer = dev_account(Roles.DEPLOYER)
    owners = [dev_account(i).address for i in owner_indexes]
    signers = owner_indexes[:threshold]
    guardian = guardian or dev_account(Roles.GUARDIAN).address

    singleton = SafeV141.deploy_contract(client, deployer).contract_address
    factory = ProxyFactoryV141.deploy_contract(client, deployer).contract_address
    # SafeCreator picks a random salt; a fixed one gives the same Safe address on every build, so demos and
    # replays are reproducible to the byte.
    initializer = get_safe_V1_4_1_contract(w3, NULL_ADDRESS).encode_abi(
        "setup", [owners, threshold, NULL_ADDRESS, b"", NULL_ADDRESS, NULL_ADDRESS, 0, NULL_ADDRESS])
    created = ProxyFactoryV141(factory, client).deploy_proxy_contract_with_nonce(  # type: ignore[abstract]
        deployer, singleton, initializer=bytes.fromhex(initializer[2:]), salt_nonce=SAFE_SALT)
    w3.eth.wait_for_transaction_receipt(created.tx_hash, timeout=30)
    safe = created.contract_address

    asset = deploy(w3, "TestToken", "Demo Dollar", "dUSD")
    collateral = deploy(w3, "TestToken", "Demo Collateral", "dCOL")
    oracle = deploy(w3, "PriceOracle", safe, dev_account(Roles.ORACLE_UPDATER).address, TOKEN)
    breaker = deploy(w3, "CircuitBreaker", safe)
    vault = deploy(w3, "Vault", asset.address, collateral.address, oracle.address, breaker.address, safe)
    module = deploy(w3, "GuardianModule", safe)

    safe_abi = contract(w3, "GuardianModule", module.address)  # only for encoding module calls below
    safe_contract = client.w3.eth.contract(address=safe, abi=SafeV141(safe, client).contract.abi)
    exec_as_owners(client, safe, safe, safe_contract.encode_abi("enableModule", [module.address]), signers)
    exec_as_owners(client, safe, module.address, safe_abi.encode_abi("addGuardian", [guardian]), signers)
    for target, selector in ((vault.address, _selector(vault, "pause")), (breaker.address, _selector(breaker, "trip"))):
        exec_as_owners(client, safe, module.address,
                       safe_abi.encode_abi("allowAction", [target, selector, b"\x00" * 32, ACTION_COOLDOWN]),
                       signers)

    for index, amount in zip(Roles.DEPOSITORS, deposits, strict=True):
        depositor = dev_account(index).address
        transact(w3, asset.functions.mint(depositor, amount * TOKEN), depositor)
        transact(w3, asset.functions.approve(vault.address, amount * TOKEN), depositor)
        transact(w3, vault.functions.deposit(amount * TOKEN, depositor), depositor)

    # Last, so that every address above stays what it was before batches existed (demos and replays repeat).
    install_multisend_call_only(w3)
    return World(rpc_url=rpc_url, chain_id=w3.eth.chain_id, safe=safe, module=module.address,
                 asset=asset.address, collateral=collateral.address, oracle=oracle.address,
                 breaker=breaker.address, vault=vault.address, owners=tuple(owners), guardian=guardian,
                 threshold=threshold)


def install_multisend_call_only(w3: Web3) -> None:
    """Puts Safe's MultiSendCallOnly v1.4.1 at its canonical address on a local chain that lacks it, as Safe
    deployed it everywhere: its published init code through the singleton factory with salt 0 (the factory's code
    is set with anvil_setCode when absent). Landing on the canonical address proves the code is Safe's own."""
    if w3.eth.get_code(MULTISEND_CALL_ONLY):
        return
    if not w3.eth.get_code(SAFE_SINGLETON_FACTORY):
        w3.provider.make_request("anvil_setCode",  # type: ignore[arg-type]
                                 [SAFE_SINGLETON_FACTORY, SINGLETON_FACTORY_CODE])
    init_code = get_multi_send_call_only_V1_4_1_contract(w3).bytecode
    deployer = dev_account(Roles.DEPLOYER).address
    tx_hash = w3.eth.send_transaction({"from": deployer, "to": SAFE_SINGLETON_FACTORY,
                                       "data": b"\x00" * 32 + bytes(init_code)})
    w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if not w3.eth.get_code(MULTISEND_CALL_ONLY):
        raise RuntimeError(f"MultiSendCallOnly did not land at {MULTISEND_CALL_ONLY}: not Safe's published code")


def _selector(deployed: Contract, name: str) -> bytes:
    return bytes.fromhex(deployed.get_function_by_name(name)().selector[2:])


def write_config(world: World, folder: Path, *, key_env: str, policies_dir: Path = POLICIES_DIR,
                 poll_interval: str = "100ms", database: Path | None = None, mempool_ws: str | None = None,
                 database_url: str | None = None) -> Path:
    """An onguard.toml for this world, as a protocol team would write it (the key comes from `key_env`)."""
    folder.mkdir(parents=True, exist_ok=True)
    abi = lambda name: json.dumps(str(ARTIFACTS_DIR / f"{name}.sol" / f"{name}.json"))  # noqa: E731
    state = (f"database_url = {json.dumps(database_url)}" if database_url
             else f"database = {json.dumps(str(database or folder / 'onguard.db'))}")
    text = f"""# onguard configuration for the demo world.
[chain]
rpc_url = "{world.rpc_url}"
chain_id = {world.chain_id}
poll_interval = "{poll_interval}"
start_block = "latest"

[safe]
address = "{world.safe}"
guardian_module = "{world.module}"

[guardian]
key_env = "{key_env}"

[contracts.vault]
address = "{world.vault}"
abi = {abi("Vault")}

[contracts.breaker]
address = "{world.breaker}"
abi = {abi("CircuitBreaker")}

[contracts.oracle]
address = "{world.oracle}"
abi = {abi("PriceOracle")}

[contracts.asset]
address = "{world.asset}"
abi = {abi("TestToken")}

[contracts.module]
address = "{world.module}"
abi = {abi("GuardianModule")}

[actions.pause_vault]
contract = "vault"
call = "pause()"
done_when = "paused()"
undo = "unpause()"          # the owners' way back, proposed by `onguard recover`

[actions.trip_breaker]
contract = "breaker"
call = "trip()"
done_when = "tripped()"
undo = "reset()"

[policies]
dir = {json.dumps(str(policies_dir))}

[state]
{state}
"""
    if mempool_ws:
        text += f'\n[mempool]\nenabled = true\nws_url = "{mempool_ws}"\n'

    path = folder / "onguard.toml"
    path.write_text(text)
    return path
