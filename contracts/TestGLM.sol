// SPDX-License-Identifier: MIT
pragma solidity ^0.8.20;

/// @title Test GLM (tGLM): an ERC-20 token for local and test chains.
/// @notice ANYONE may mint ANY amount to ANY address with `mint`. That is the point on a
/// test chain (`loam payment fund`, the testnet script) and it is why this contract must
/// never be deployed where its tokens could be taken for real GLM.
/// Otherwise a plain ERC-20 with 18 decimals: transfer, approve, transferFrom and the
/// Transfer/Approval events. An allowance of type(uint256).max is never decreased, so a
/// payer that approved the multi-transfer contract once does not pay for an allowance
/// write per payee.
contract TestGLM {
    string public constant name = "Test GLM";
    string public constant symbol = "tGLM";
    uint8 public constant decimals = 18;

    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    /// @notice Creates `amount` new tokens for `to`. Open to everyone: test chains only.
    function mint(address to, uint256 amount) external {
        require(to != address(0), "tGLM: mint to the zero address");
        // Checked: the total supply bounds every balance, so the balance cannot overflow.
        totalSupply += amount;
        unchecked {
            balanceOf[to] += amount;
        }
        emit Transfer(address(0), to, amount);
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        _transfer(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        emit Approval(msg.sender, spender, amount);
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        if (allowed != type(uint256).max) {
            require(allowed >= amount, "tGLM: insufficient allowance");
            unchecked {
                allowance[from][msg.sender] = allowed - amount;
            }
        }
        _transfer(from, to, amount);
        return true;
    }

    function _transfer(address from, address to, uint256 amount) private {
        require(to != address(0), "tGLM: transfer to the zero address");
        uint256 balance = balanceOf[from];
        require(balance >= amount, "tGLM: insufficient balance");
        // Unchecked: balance >= amount, and the total supply bounds every balance.
        unchecked {
            balanceOf[from] = balance - amount;
            balanceOf[to] += amount;
        }
        emit Transfer(from, to, amount);
    }
}
