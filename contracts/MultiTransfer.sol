// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @notice The part of ERC-20 that MultiTransfer uses.
interface IERC20 {
    function transferFrom(address from, address to, uint256 amount) external returns (bool);
}

/// @title MultiTransfer: pays many payees in one transaction.
/// @notice The payer first approves this contract on the token (once, for a large
/// allowance); `batchTransfer` then moves tokens straight from the payer (msg.sender) to
/// each payee with the token's transferFrom. It holds no tokens and has no owner or state:
/// nobody can move anyone's tokens but their own. The token emits one Transfer event per
/// payee (what a payee checks to verify its payment); this contract adds one
/// BatchTransferred event per batch. The whole batch reverts when the arrays differ in
/// length or any single transfer fails, so a batch is paid entirely or not at all.
contract MultiTransfer {
    event BatchTransferred(IERC20 indexed token, address indexed payer, uint256 payees, uint256 total);

    function batchTransfer(IERC20 token, address[] calldata recipients, uint256[] calldata amounts) external {
        uint256 n = recipients.length;
        require(n == amounts.length, "MultiTransfer: length mismatch");
        uint256 total = 0;
        for (uint256 i = 0; i < n; ++i) {
            // A reverting token reverts the batch with the token's own reason.
            require(token.transferFrom(msg.sender, recipients[i], amounts[i]), "MultiTransfer: transfer failed");
            total += amounts[i];
        }
        emit BatchTransferred(token, msg.sender, n, total);
    }
}
