/// A tiny x86 assembler for 32-bit protected-mode test guests (the code a PVH entry
/// runs: flat segments, paging off), so that hostile guests are written as readable
/// Swift instead of hand-assembled bytes.
///
/// It encodes the handful of instructions such guests need: moves between registers,
/// immediates and memory (absolute or register plus displacement, 8/16/32-bit),
/// `movzx`, the eight ALU operations, shifts and rotates, `inc`/`dec`, `test`, port I/O,
/// `push`/`pop`/`call`/`ret`, `jmp`/`jcc` to labels (always the `rel32` forms, patched by
/// ``assemble()``), `hlt`, and a few helpers for the VMM's serial port and ACPI power-off.
/// Encodings follow the Intel SDM and match what GNU `as --32` emits for the same text.
///
/// ```swift
/// var a = X86Assembler()
/// a.serialPrint("hello\n")
/// a.powerOff()
/// let kernel = TinyKernel.pvhELF(code: try a.assemble())
/// ```
public struct X86Assembler {
    /// A 32-bit general-purpose register, numbered as in the ModRM byte.
    public enum Register32: UInt8, Sendable, CaseIterable {
        case eax, ecx, edx, ebx, esp, ebp, esi, edi
    }

    /// A 16-bit general-purpose register (accessed with the operand-size prefix `0x66`).
    public enum Register16: UInt8, Sendable, CaseIterable {
        case ax, cx, dx, bx, sp, bp, si, di
    }

    /// An 8-bit register, numbered as in the ModRM byte (`ah`..`bh` are 4...7).
    public enum Register8: UInt8, Sendable, CaseIterable {
        case al, cl, dl, bl, ah, ch, dh, bh
    }

    /// A memory operand: an absolute 32-bit address, or a base register plus a signed
    /// displacement (no index register).
    public struct Memory: Sendable, Equatable {
        /// The base register, or `nil` for an absolute address.
        public var base: Register32?
        /// The displacement (the address itself when `base` is `nil`).
        public var displacement: Int32

        /// The absolute address `address` (`[disp32]`).
        public static func absolute(_ address: UInt32) -> Memory {
            Memory(base: nil, displacement: Int32(bitPattern: address))
        }

        /// `[base + displacement]`.
        public static func at(_ base: Register32, _ displacement: Int32 = 0) -> Memory {
            Memory(base: base, displacement: displacement)
        }
    }

    /// A condition code for `jcc`, numbered as in the opcode's low nibble.
    public enum Condition: UInt8, Sendable, CaseIterable {
        /// Overflow.
        case o
        /// No overflow.
        case no
        /// Below (unsigned `<`, carry set).
        case b
        /// Above or equal (unsigned `>=`, carry clear).
        case ae
        /// Equal (zero set).
        case e
        /// Not equal (zero clear).
        case ne
        /// Below or equal (unsigned `<=`).
        case be
        /// Above (unsigned `>`).
        case a
        /// Sign set.
        case s
        /// Sign clear.
        case ns
        /// Parity even.
        case p
        /// Parity odd.
        case np
        /// Less (signed `<`).
        case l
        /// Greater or equal (signed `>=`).
        case ge
        /// Less or equal (signed `<=`).
        case le
        /// Greater (signed `>`).
        case g

        /// Zero set (the same code as ``e``).
        public static let z = Condition.e
        /// Zero clear (the same code as ``ne``).
        public static let nz = Condition.ne
    }

    /// The eight classic ALU operations, numbered as in their `/digit` opcode extension.
    public enum ALUOperation: UInt8, Sendable, CaseIterable {
        case add, or, adc, sbb, and, sub, xor, cmp
    }

    /// The shift and rotate operations, numbered as in their `/digit` opcode extension.
    public enum ShiftOperation: UInt8, Sendable, CaseIterable {
        case rol = 0, ror = 1, shl = 4, shr = 5, sar = 7
    }

    /// A position in the code that jumps, calls and address loads can refer to before
    /// or after it is bound.
    public struct Label: Hashable, Sendable {
        fileprivate let id: Int
    }

    /// Why ``assemble()`` could not produce code.
    public enum AssemblerError: Error, Equatable, Sendable, CustomStringConvertible {
        /// A label was used by a jump, call or address load but never bound.
        case unboundLabel(id: Int)
        /// A label was bound at two places (`first` and `second` are code offsets).
        case labelBoundTwice(id: Int, first: Int, second: Int)

        /// A sentence that explains the error.
        public var description: String {
            switch self {
            case let .unboundLabel(id):
                "label \(id) is used but never bound: call bind(_:) where the code it names starts"
            case let .labelBoundTwice(id, first, second):
                "label \(id) is bound twice, at code offsets \(first) and \(second): use a new label for the second place"
            }
        }
    }

    private enum FixupKind {
        /// A 32-bit displacement relative to the end of the field.
        case relative32
        /// The label's absolute address (origin plus offset), 32 bits.
        case absolute32
    }

    private struct Fixup {
        var at: Int
        var label: Label
        var kind: FixupKind
    }

    /// The guest address the first byte will be loaded at (for ``address(of:)``-style loads).
    public let origin: UInt32
    /// The bytes emitted so far (jump and address fields still hold zeroes until ``assemble()``).
    public private(set) var bytes: [UInt8] = []
    private var labelOffsets: [Int: Int] = [:]
    private var labelCount = 0
    private var fixups: [Fixup] = []
    private var errors: [AssemblerError] = []

    /// Starts an empty program that will be loaded at `origin` (the tiny kernels' load
    /// address by default).
    public init(origin: UInt32 = 0x10_0000) {
        self.origin = origin
    }

    /// The code offset of the next byte.
    public var offset: Int { bytes.count }

    /// The guest address of the next byte.
    public var currentAddress: UInt32 { origin &+ UInt32(truncatingIfNeeded: bytes.count) }

    // MARK: - Labels

    /// A new label, not yet bound.
    public mutating func label() -> Label {
        labelCount += 1
        return Label(id: labelCount)
    }

    /// Binds `label` to the current position.
    public mutating func bind(_ label: Label) {
        if let first = labelOffsets[label.id] {
            errors.append(.labelBoundTwice(id: label.id, first: first, second: bytes.count))
            return
        }
        labelOffsets[label.id] = bytes.count
    }

    /// A new label bound to the current position (a backward jump target).
    public mutating func here() -> Label {
        let new = label()
        bind(new)
        return new
    }

    /// Resolves every jump, call and address field and returns the machine code.
    ///
    /// - Throws: ``AssemblerError`` for a label used but never bound, or bound twice.
    public func assemble() throws(AssemblerError) -> [UInt8] {
        if let error = errors.first { throw error }
        var code = bytes
        for fixup in fixups {
            guard let target = labelOffsets[fixup.label.id] else { throw .unboundLabel(id: fixup.label.id) }
            let value: UInt32
            switch fixup.kind {
            case .relative32:
                value = UInt32(bitPattern: Int32(target - (fixup.at + 4)))
            case .absolute32:
                value = origin &+ UInt32(target)
            }
            for i in 0..<4 { code[fixup.at + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt32(i))) }
        }
        return code
    }

    // MARK: - Raw bytes

    /// Appends raw bytes (data, or an instruction this assembler lacks).
    public mutating func emit(_ raw: [UInt8]) {
        bytes += raw
    }

    /// Appends the UTF-8 bytes of `string` (data; jump over it or place it after the code).
    public mutating func emit(string: String) {
        bytes += Array(string.utf8)
    }

    /// Pads with `nop` (`0x90`) up to a multiple of `alignment` bytes (a power of two).
    public mutating func align(_ alignment: Int) {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment \(alignment) is not a power of two")
        while bytes.count % alignment != 0 { bytes.append(0x90) }
    }

    private mutating func emit32(_ value: UInt32) {
        for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * UInt32(i)))) }
    }

    private mutating func emit16(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
    }

    /// ModRM (and SIB and displacement) for a memory operand with `reg` in the reg field.
    private mutating func emitModRM(reg: UInt8, _ memory: Memory) {
        guard let base = memory.base else {
            bytes.append(0x05 | reg << 3)                       // mod 00, r/m 101: [disp32]
            emit32(UInt32(bitPattern: memory.displacement))
            return
        }
        let b = base.rawValue
        let mod: UInt8
        if memory.displacement == 0 && base != .ebp {
            mod = 0                                             // [base] ([ebp] needs a displacement)
        } else if Int8(exactly: memory.displacement) != nil {
            mod = 1                                             // [base + disp8]
        } else {
            mod = 2                                             // [base + disp32]
        }
        bytes.append(mod << 6 | reg << 3 | (base == .esp ? 4 : b))
        if base == .esp { bytes.append(0x24) }                 // SIB: base esp, no index
        if mod == 1 { bytes.append(UInt8(bitPattern: Int8(memory.displacement))) }
        if mod == 2 { emit32(UInt32(bitPattern: memory.displacement)) }
    }

    /// ModRM for a register-direct operand (`mod` 11).
    private mutating func emitModRM(reg: UInt8, rm: UInt8) {
        bytes.append(0xC0 | reg << 3 | rm)
    }

    private static func fitsInInt8(_ value: UInt32) -> Bool {
        Int8(exactly: Int32(bitPattern: value)) != nil
    }

    // MARK: - Moves

    /// `mov r32, imm32` (`B8+r id`).
    public mutating func mov(_ destination: Register32, _ immediate: UInt32) {
        bytes.append(0xB8 + destination.rawValue)
        emit32(immediate)
    }

    /// `mov r32, imm32` with the guest address of `label` (resolved by ``assemble()``).
    public mutating func mov(_ destination: Register32, addressOf label: Label) {
        bytes.append(0xB8 + destination.rawValue)
        fixups.append(Fixup(at: bytes.count, label: label, kind: .absolute32))
        emit32(0)
    }

    /// `mov r16, imm16` (`66 B8+r iw`).
    public mutating func mov(_ destination: Register16, _ immediate: UInt16) {
        bytes += [0x66, 0xB8 + destination.rawValue]
        emit16(immediate)
    }

    /// `mov r8, imm8` (`B0+r ib`).
    public mutating func mov(_ destination: Register8, _ immediate: UInt8) {
        bytes += [0xB0 + destination.rawValue, immediate]
    }

    /// `mov r32, r32` (`89 /r`, the form GNU as emits).
    public mutating func mov(_ destination: Register32, _ source: Register32) {
        bytes.append(0x89)
        emitModRM(reg: source.rawValue, rm: destination.rawValue)
    }

    /// `mov r8, r8` (`88 /r`).
    public mutating func mov(_ destination: Register8, _ source: Register8) {
        bytes.append(0x88)
        emitModRM(reg: source.rawValue, rm: destination.rawValue)
    }

    /// `mov m32, r32` (`89 /r`; `A3 moffs32` for `eax` to an absolute address).
    public mutating func mov(_ destination: Memory, _ source: Register32) {
        if source == .eax, emitMemoryOffsetForm(0xA3, destination) { return }
        bytes.append(0x89)
        emitModRM(reg: source.rawValue, destination)
    }

    /// `mov m16, r16` (`66 89 /r`; `66 A3 moffs32` for `ax` to an absolute address).
    public mutating func mov(_ destination: Memory, _ source: Register16) {
        bytes.append(0x66)
        if source == .ax, emitMemoryOffsetForm(0xA3, destination) { return }
        bytes.append(0x89)
        emitModRM(reg: source.rawValue, destination)
    }

    /// `mov m8, r8` (`88 /r`; `A2 moffs32` for `al` to an absolute address).
    public mutating func mov(_ destination: Memory, _ source: Register8) {
        if source == .al, emitMemoryOffsetForm(0xA2, destination) { return }
        bytes.append(0x88)
        emitModRM(reg: source.rawValue, destination)
    }

    /// `mov r32, m32` (`8B /r`; `A1 moffs32` for `eax` from an absolute address).
    public mutating func mov(_ destination: Register32, _ source: Memory) {
        if destination == .eax, emitMemoryOffsetForm(0xA1, source) { return }
        bytes.append(0x8B)
        emitModRM(reg: destination.rawValue, source)
    }

    /// `mov r16, m16` (`66 8B /r`; `66 A1 moffs32` for `ax` from an absolute address).
    public mutating func mov(_ destination: Register16, _ source: Memory) {
        bytes.append(0x66)
        if destination == .ax, emitMemoryOffsetForm(0xA1, source) { return }
        bytes.append(0x8B)
        emitModRM(reg: destination.rawValue, source)
    }

    /// `mov r8, m8` (`8A /r`; `A0 moffs32` for `al` from an absolute address).
    public mutating func mov(_ destination: Register8, _ source: Memory) {
        if destination == .al, emitMemoryOffsetForm(0xA0, source) { return }
        bytes.append(0x8A)
        emitModRM(reg: destination.rawValue, source)
    }

    /// The accumulator's `moffs` forms (`A0`-`A3`), which GNU as prefers for absolute
    /// addresses; returns `false` (emitting nothing) for a based operand.
    private mutating func emitMemoryOffsetForm(_ opcode: UInt8, _ memory: Memory) -> Bool {
        guard memory.base == nil else { return false }
        bytes.append(opcode)
        emit32(UInt32(bitPattern: memory.displacement))
        return true
    }

    /// `mov dword [m], imm32` (`C7 /0 id`).
    public mutating func mov(dword destination: Memory, _ immediate: UInt32) {
        bytes.append(0xC7)
        emitModRM(reg: 0, destination)
        emit32(immediate)
    }

    /// `mov word [m], imm16` (`66 C7 /0 iw`).
    public mutating func mov(word destination: Memory, _ immediate: UInt16) {
        bytes += [0x66, 0xC7]
        emitModRM(reg: 0, destination)
        emit16(immediate)
    }

    /// `mov byte [m], imm8` (`C6 /0 ib`).
    public mutating func mov(byte destination: Memory, _ immediate: UInt8) {
        bytes.append(0xC6)
        emitModRM(reg: 0, destination)
        bytes.append(immediate)
    }

    /// `movzx r32, byte [m]` (`0F B6 /r`).
    public mutating func movzx(_ destination: Register32, byte source: Memory) {
        bytes += [0x0F, 0xB6]
        emitModRM(reg: destination.rawValue, source)
    }

    /// `movzx r32, word [m]` (`0F B7 /r`).
    public mutating func movzx(_ destination: Register32, word source: Memory) {
        bytes += [0x0F, 0xB7]
        emitModRM(reg: destination.rawValue, source)
    }

    /// `movzx r32, r8` (`0F B6 /r`).
    public mutating func movzx(_ destination: Register32, _ source: Register8) {
        bytes += [0x0F, 0xB6]
        emitModRM(reg: destination.rawValue, rm: source.rawValue)
    }

    /// `movzx r32, r16` (`0F B7 /r`).
    public mutating func movzx(_ destination: Register32, _ source: Register16) {
        bytes += [0x0F, 0xB7]
        emitModRM(reg: destination.rawValue, rm: source.rawValue)
    }

    /// `lea r32, [m]` (`8D /r`).
    public mutating func lea(_ destination: Register32, _ source: Memory) {
        bytes.append(0x8D)
        emitModRM(reg: destination.rawValue, source)
    }

    // MARK: - Arithmetic and logic

    /// `op r32, imm`: `83 /op ib` when the immediate fits in a signed byte, the short
    /// `eax` form (`op*8+5 id`) for `eax`, else `81 /op id` (GNU as's choices).
    public mutating func alu(_ operation: ALUOperation, _ destination: Register32, _ immediate: UInt32) {
        if Self.fitsInInt8(immediate) {
            bytes.append(0x83)
            emitModRM(reg: operation.rawValue, rm: destination.rawValue)
            bytes.append(UInt8(truncatingIfNeeded: immediate))
        } else if destination == .eax {
            bytes.append(operation.rawValue << 3 | 0x05)
            emit32(immediate)
        } else {
            bytes.append(0x81)
            emitModRM(reg: operation.rawValue, rm: destination.rawValue)
            emit32(immediate)
        }
    }

    /// `op r32, r32` (`op*8+1 /r`).
    public mutating func alu(_ operation: ALUOperation, _ destination: Register32, _ source: Register32) {
        bytes.append(operation.rawValue << 3 | 0x01)
        emitModRM(reg: source.rawValue, rm: destination.rawValue)
    }

    /// `op r8, imm8`: the short `al` form (`op*8+4 ib`), else `80 /op ib`.
    public mutating func alu(_ operation: ALUOperation, _ destination: Register8, _ immediate: UInt8) {
        if destination == .al {
            bytes += [operation.rawValue << 3 | 0x04, immediate]
        } else {
            bytes.append(0x80)
            emitModRM(reg: operation.rawValue, rm: destination.rawValue)
            bytes.append(immediate)
        }
    }

    /// `op dword [m], imm`: `83 /op ib` when the immediate fits in a signed byte, else `81 /op id`.
    public mutating func alu(_ operation: ALUOperation, dword destination: Memory, _ immediate: UInt32) {
        let short = Self.fitsInInt8(immediate)
        bytes.append(short ? 0x83 : 0x81)
        emitModRM(reg: operation.rawValue, destination)
        if short { bytes.append(UInt8(truncatingIfNeeded: immediate)) } else { emit32(immediate) }
    }

    /// `add r32, imm`.
    public mutating func add(_ destination: Register32, _ immediate: UInt32) { alu(.add, destination, immediate) }
    /// `add r32, r32`.
    public mutating func add(_ destination: Register32, _ source: Register32) { alu(.add, destination, source) }
    /// `sub r32, imm`.
    public mutating func sub(_ destination: Register32, _ immediate: UInt32) { alu(.sub, destination, immediate) }
    /// `sub r32, r32`.
    public mutating func sub(_ destination: Register32, _ source: Register32) { alu(.sub, destination, source) }
    /// `and r32, imm`.
    public mutating func and(_ destination: Register32, _ immediate: UInt32) { alu(.and, destination, immediate) }
    /// `and r32, r32`.
    public mutating func and(_ destination: Register32, _ source: Register32) { alu(.and, destination, source) }
    /// `or r32, imm`.
    public mutating func or(_ destination: Register32, _ immediate: UInt32) { alu(.or, destination, immediate) }
    /// `or r32, r32`.
    public mutating func or(_ destination: Register32, _ source: Register32) { alu(.or, destination, source) }
    /// `xor r32, imm`.
    public mutating func xor(_ destination: Register32, _ immediate: UInt32) { alu(.xor, destination, immediate) }
    /// `xor r32, r32`.
    public mutating func xor(_ destination: Register32, _ source: Register32) { alu(.xor, destination, source) }
    /// `cmp r32, imm`.
    public mutating func cmp(_ destination: Register32, _ immediate: UInt32) { alu(.cmp, destination, immediate) }
    /// `cmp r32, r32`.
    public mutating func cmp(_ destination: Register32, _ source: Register32) { alu(.cmp, destination, source) }
    /// `cmp r8, imm8`.
    public mutating func cmp(_ destination: Register8, _ immediate: UInt8) { alu(.cmp, destination, immediate) }

    /// `test r32, r32` (`85 /r`).
    public mutating func test(_ destination: Register32, _ source: Register32) {
        bytes.append(0x85)
        emitModRM(reg: source.rawValue, rm: destination.rawValue)
    }

    /// `test r32, imm32`: `A9 id` for `eax`, else `F7 /0 id`.
    public mutating func test(_ destination: Register32, _ immediate: UInt32) {
        if destination == .eax {
            bytes.append(0xA9)
        } else {
            bytes.append(0xF7)
            emitModRM(reg: 0, rm: destination.rawValue)
        }
        emit32(immediate)
    }

    /// `test r8, imm8`: `A8 ib` for `al`, else `F6 /0 ib`.
    public mutating func test(_ destination: Register8, _ immediate: UInt8) {
        if destination == .al {
            bytes.append(0xA8)
        } else {
            bytes.append(0xF6)
            emitModRM(reg: 0, rm: destination.rawValue)
        }
        bytes.append(immediate)
    }

    /// `inc r32` (`40+r`, the one-byte 32-bit-mode form).
    public mutating func inc(_ register: Register32) { bytes.append(0x40 + register.rawValue) }
    /// `dec r32` (`48+r`).
    public mutating func dec(_ register: Register32) { bytes.append(0x48 + register.rawValue) }
    /// `not r32` (`F7 /2`).
    public mutating func not(_ register: Register32) {
        bytes.append(0xF7)
        emitModRM(reg: 2, rm: register.rawValue)
    }
    /// `neg r32` (`F7 /3`).
    public mutating func neg(_ register: Register32) {
        bytes.append(0xF7)
        emitModRM(reg: 3, rm: register.rawValue)
    }

    /// A shift or rotate by an immediate count: `D1 /op` for a count of 1, else `C1 /op ib`.
    public mutating func shift(_ operation: ShiftOperation, _ register: Register32, _ count: UInt8) {
        if count == 1 {
            bytes.append(0xD1)
            emitModRM(reg: operation.rawValue, rm: register.rawValue)
        } else {
            bytes.append(0xC1)
            emitModRM(reg: operation.rawValue, rm: register.rawValue)
            bytes.append(count)
        }
    }

    /// A shift or rotate by `cl` (`D3 /op`).
    public mutating func shiftByCL(_ operation: ShiftOperation, _ register: Register32) {
        bytes.append(0xD3)
        emitModRM(reg: operation.rawValue, rm: register.rawValue)
    }

    /// `shl r32, imm8`.
    public mutating func shl(_ register: Register32, _ count: UInt8) { shift(.shl, register, count) }
    /// `shr r32, imm8`.
    public mutating func shr(_ register: Register32, _ count: UInt8) { shift(.shr, register, count) }
    /// `rol r32, imm8`.
    public mutating func rol(_ register: Register32, _ count: UInt8) { shift(.rol, register, count) }

    // MARK: - Port I/O

    /// `out dx, al` (`EE`).
    public mutating func outByte() { bytes.append(0xEE) }
    /// `out dx, ax` (`66 EF`).
    public mutating func outWord() { bytes += [0x66, 0xEF] }
    /// `out dx, eax` (`EF`).
    public mutating func outDword() { bytes.append(0xEF) }
    /// `out imm8, al` (`E6 ib`).
    public mutating func outByte(port: UInt8) { bytes += [0xE6, port] }
    /// `in al, dx` (`EC`).
    public mutating func inByte() { bytes.append(0xEC) }
    /// `in ax, dx` (`66 ED`).
    public mutating func inWord() { bytes += [0x66, 0xED] }
    /// `in eax, dx` (`ED`).
    public mutating func inDword() { bytes.append(0xED) }
    /// `in al, imm8` (`E4 ib`).
    public mutating func inByte(port: UInt8) { bytes += [0xE4, port] }

    // MARK: - Control flow

    /// `jmp rel32` to `label` (`E9 cd`).
    public mutating func jmp(_ label: Label) {
        bytes.append(0xE9)
        relative(to: label)
    }

    /// `jcc rel32` to `label` (`0F 80+cc cd`).
    public mutating func j(_ condition: Condition, _ label: Label) {
        bytes += [0x0F, 0x80 + condition.rawValue]
        relative(to: label)
    }

    /// `je`/`jz` to `label`.
    public mutating func je(_ label: Label) { j(.e, label) }
    /// `jne`/`jnz` to `label`.
    public mutating func jne(_ label: Label) { j(.ne, label) }
    /// `jb` (unsigned below) to `label`.
    public mutating func jb(_ label: Label) { j(.b, label) }
    /// `jae` (unsigned above or equal) to `label`.
    public mutating func jae(_ label: Label) { j(.ae, label) }
    /// `jbe` (unsigned below or equal) to `label`.
    public mutating func jbe(_ label: Label) { j(.be, label) }
    /// `ja` (unsigned above) to `label`.
    public mutating func ja(_ label: Label) { j(.a, label) }

    /// `call rel32` to `label` (`E8 cd`); the callee returns with ``ret()``.
    public mutating func call(_ label: Label) {
        bytes.append(0xE8)
        relative(to: label)
    }

    /// `ret` (`C3`).
    public mutating func ret() { bytes.append(0xC3) }
    /// `push r32` (`50+r`).
    public mutating func push(_ register: Register32) { bytes.append(0x50 + register.rawValue) }
    /// `pop r32` (`58+r`).
    public mutating func pop(_ register: Register32) { bytes.append(0x58 + register.rawValue) }
    /// `hlt` (`F4`).
    public mutating func hlt() { bytes.append(0xF4) }
    /// `cli` (`FA`).
    public mutating func cli() { bytes.append(0xFA) }
    /// `nop` (`90`).
    public mutating func nop() { bytes.append(0x90) }

    private mutating func relative(to label: Label) {
        fixups.append(Fixup(at: bytes.count, label: label, kind: .relative32))
        emit32(0)
    }
}

// MARK: - Helpers for the VMM's platform devices

extension X86Assembler {
    /// The first 16550 UART (COM1).
    public static let serialPort: UInt16 = 0x3F8
    /// Cloud Hypervisor's ACPI sleep control port (the FADT's `SLEEP_CONTROL_REG`).
    public static let acpiSleepPort: UInt16 = 0x600
    /// The byte that requests S5 (SLP_TYP 5, SLP_EN) at ``acpiSleepPort``.
    public static let acpiPowerOffValue: UInt8 = 0x34

    /// Reprograms COM1 as a driver would after other code may have scrambled it: 8N1
    /// with the divisor latch closed, interrupts off, FIFO reset, loopback off. Clobbers
    /// `eax` and `edx`.
    public mutating func serialInit() {
        let base = UInt32(Self.serialPort)
        for (register, value) in [(3, 0x80), (0, 0x01), (1, 0x00), (3, 0x03), (1, 0x00), (2, 0x07), (4, 0x03)] as [(UInt32, UInt8)] {
            mov(.edx, base + register)
            mov(.al, value)
            outByte()
        }
    }

    /// Writes `text` to COM1, one `out` per byte (the VMM's UART takes bytes at once).
    /// Clobbers `eax` and `edx`.
    public mutating func serialPrint(_ text: String) {
        mov(.edx, UInt32(Self.serialPort))
        for byte in text.utf8 {
            mov(.al, byte)
            outByte()
        }
    }

    /// Writes `register` to COM1 as eight lowercase hexadecimal digits. Clobbers `eax`,
    /// `ecx` and `edx` (and `ebx`, which carries the value).
    public mutating func serialPrintHex(_ register: Register32) {
        if register != .ebx { mov(.ebx, register) }
        mov(.ecx, 8)
        mov(.edx, UInt32(Self.serialPort))
        let digit = here()
        rol(.ebx, 4)
        mov(.eax, .ebx)
        and(.eax, 0xF)
        cmp(.eax, 10)
        let decimal = label()
        jb(decimal)
        add(.eax, UInt32(UInt8(ascii: "a") - 10 - UInt8(ascii: "0")))
        bind(decimal)
        add(.eax, UInt32(UInt8(ascii: "0")))
        outByte()
        dec(.ecx)
        jne(digit)
    }

    /// Requests ACPI S5 (the VMM powers off), then halts for ever in case it did not.
    public mutating func powerOff() {
        mov(.edx, UInt32(Self.acpiSleepPort))
        mov(.al, Self.acpiPowerOffValue)
        outByte()
        let halt = here()
        hlt()
        jmp(halt)
    }

    /// Advances the xorshift32 generator (shifts 13, 17, 5) whose state lives in
    /// `state` (which must not start at 0). Clobbers `scratch`.
    public mutating func xorshift32(state: Register32, scratch: Register32) {
        precondition(state != scratch, "xorshift32 needs a scratch register distinct from its state")
        for (operation, count) in [(ShiftOperation.shl, UInt8(13)), (.shr, 17), (.shl, 5)] {
            mov(scratch, state)
            shift(operation, scratch, count)
            xor(state, scratch)
        }
    }
}
