extension AML {
    /// A method-local variable `Local0` ... `Local7` (opcodes 0x60 ... 0x67).
    public struct Local: AMLConvertible, Hashable {
        /// The index, 0...7.
        public let index: UInt8

        /// `Local<index>`; an index above 7 is a programming error and traps.
        public init(_ index: UInt8) {
            precondition(index <= 7, "AML has Local0 ... Local7, not Local\(index)")
            self.index = index
        }

        /// Appends the one-byte opcode.
        public func appendAML(to bytes: inout [UInt8]) { bytes.append(AMLOpcode.local0 + index) }
    }

    /// A method argument `Arg0` ... `Arg6` (opcodes 0x68 ... 0x6E).
    public struct Arg: AMLConvertible, Hashable {
        /// The index, 0...6.
        public let index: UInt8

        /// `Arg<index>`; an index above 6 is a programming error and traps.
        public init(_ index: UInt8) {
            precondition(index <= 6, "AML has Arg0 ... Arg6, not Arg\(index)")
            self.index = index
        }

        /// Appends the one-byte opcode.
        public func appendAML(to bytes: inout [UInt8]) { bytes.append(AMLOpcode.arg0 + index) }
    }

    /// `CreateDWordField` (opcode 0x8A) or `CreateQWordField` (0x8F): the source buffer, the byte
    /// index and the new field's name (a 32- or 64-bit view into the buffer).
    public struct CreateBufferField: AMLConvertible {
        /// The opcode, which gives the field's width.
        public let opcode: UInt8
        /// The buffer the field looks into (an `Arg`, a `Local` or a name).
        public let source: any AMLConvertible
        /// The field's offset in bytes.
        public let byteIndex: any AMLConvertible
        /// The field's name.
        public let name: NameString

        /// A field `name` of `opcode`'s width at `byteIndex` in `source`.
        public init(opcode: UInt8, _ source: any AMLConvertible, _ byteIndex: any AMLConvertible, _ name: NameString) {
            self.opcode = opcode
            self.source = source
            self.byteIndex = byteIndex
            self.name = name
        }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(opcode)
            source.appendAML(to: &bytes)
            byteIndex.appendAML(to: &bytes)
            name.appendAML(to: &bytes)
        }
    }

    /// `CreateDWordField (source, byteIndex, name)`: a 32-bit field `name` at `byteIndex` in `source`.
    public static func CreateDWordField(_ source: any AMLConvertible, _ byteIndex: any AMLConvertible, _ name: NameString) -> CreateBufferField {
        CreateBufferField(opcode: 0x8a, source, byteIndex, name)
    }

    /// `CreateQWordField (source, byteIndex, name)`: a 64-bit field `name` at `byteIndex` in `source`.
    public static func CreateQWordField(_ source: any AMLConvertible, _ byteIndex: any AMLConvertible, _ name: NameString) -> CreateBufferField {
        CreateBufferField(opcode: 0x8f, source, byteIndex, name)
    }

    /// ASL `ToUUID ("aabbccdd-eeff-gghh-iijj-kkllmmnnoopp")`: the 16-byte buffer ACPI
    /// methods such as `_OSC` compare their UUID argument with (the first three fields
    /// little-endian, the last two in order).
    public static func uuid(_ text: String) -> Buffer {
        let hex = text.filter { $0 != "-" }
        precondition(hex.count == 32, "a UUID has 32 hexadecimal digits: \(text)")
        var raw: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            raw.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        let ordered = Array(raw[0..<4].reversed()) + Array(raw[4..<6].reversed()) + Array(raw[6..<8].reversed()) + Array(raw[8..<16])
        return Buffer(ordered)
    }

    /// `Return(value)`: `ReturnOp` 0xA4 and the value.
    public struct Return: AMLConvertible {
        /// The value returned.
        public let value: any AMLConvertible

        /// Returns `value`.
        public init(_ value: any AMLConvertible) { self.value = value }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.returnOp)
            value.appendAML(to: &bytes)
        }
    }

    /// `Store(value, target)`: `StoreOp` 0x70, the value, the target.
    public struct Store: AMLConvertible {
        /// The value stored.
        public let value: any AMLConvertible
        /// Where it goes: a local, an argument or a named object.
        public let target: any AMLConvertible

        /// Stores `value` into `target`.
        public init(_ value: any AMLConvertible, into target: any AMLConvertible) {
            self.value = value
            self.target = target
        }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.store)
            value.appendAML(to: &bytes)
            target.appendAML(to: &bytes)
        }
    }

    /// `If (predicate) { ... } Else { ... }`: `IfOp` 0xA0, PkgLength, the predicate, the
    /// body; then, when there is an else branch, `ElseOp` 0xA1, PkgLength, its body.
    public struct If: AMLConvertible {
        /// The condition.
        public let predicate: any AMLConvertible
        /// What runs when the condition is non-zero.
        public let then: [any AMLConvertible]
        /// What runs otherwise (`nil`: no `Else`).
        public let otherwise: [any AMLConvertible]?

        /// A conditional with an optional else branch.
        public init(_ predicate: any AMLConvertible, then: [any AMLConvertible], else otherwise: [any AMLConvertible]? = nil) {
            self.predicate = predicate
            self.then = then
            self.otherwise = otherwise
        }

        /// A conditional whose branch is written one statement per line.
        public init(_ predicate: any AMLConvertible, @AMLBuilder then: () -> [any AMLConvertible]) {
            self.init(predicate, then: then())
        }

        /// Appends the `If` (and `Else`) blocks.
        public func appendAML(to bytes: inout [UInt8]) {
            AML.appendPackage([AMLOpcode.ifOp], predicate.amlBytes + AML.encode(then), to: &bytes)
            if let otherwise { AML.appendPackage([AMLOpcode.elseOp], AML.encode(otherwise), to: &bytes) }
        }
    }

    /// `While (predicate) { ... }`: `WhileOp` 0xA2, PkgLength, the predicate, the body.
    public struct While: AMLConvertible {
        /// The loop condition.
        public let predicate: any AMLConvertible
        /// The loop body.
        public let body: [any AMLConvertible]

        /// A loop.
        public init(_ predicate: any AMLConvertible, _ body: [any AMLConvertible]) {
            self.predicate = predicate
            self.body = body
        }

        /// A loop whose body is written one statement per line.
        public init(_ predicate: any AMLConvertible, @AMLBuilder body: () -> [any AMLConvertible]) {
            self.init(predicate, body())
        }

        /// Appends the loop.
        public func appendAML(to bytes: inout [UInt8]) {
            AML.appendPackage([AMLOpcode.whileOp], predicate.amlBytes + AML.encode(body), to: &bytes)
        }
    }

    /// `Break` (0xA5): leaves the innermost `While`.
    public struct Break: AMLConvertible, Hashable {
        /// The statement.
        public init() {}

        /// Appends the opcode.
        public func appendAML(to bytes: inout [UInt8]) { bytes.append(AMLOpcode.breakOp) }
    }

    /// `Notify(object, value)`: `NotifyOp` 0x86, the object, the notification value (for
    /// example 0x80 for a power button press).
    public struct Notify: AMLConvertible {
        /// The device notified (a name string).
        public let object: any AMLConvertible
        /// The notification value.
        public let value: any AMLConvertible

        /// Notifies `object` with `value`.
        public init(_ object: NameString, _ value: any AMLConvertible) {
            self.object = object
            self.value = value
        }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.notify)
            object.appendAML(to: &bytes)
            value.appendAML(to: &bytes)
        }
    }

    /// A method invocation (ASL `\_SB_.CPUS.CSCN()`): the method's name followed by its
    /// arguments. The argument count must match the method's definition.
    public struct MethodCall: AMLConvertible {
        /// The method called.
        public let method: NameString
        /// The arguments.
        public let arguments: [any AMLConvertible]

        /// Calls `method` with `arguments`.
        public init(_ method: NameString, _ arguments: [any AMLConvertible] = []) {
            self.method = method
            self.arguments = arguments
        }

        /// Appends the invocation.
        public func appendAML(to bytes: inout [UInt8]) {
            method.appendAML(to: &bytes)
            bytes += AML.encode(arguments)
        }
    }

    /// `Acquire(mutex, timeout)`: 0x5B 0x23, the mutex, a 16-bit timeout in milliseconds
    /// (0xFFFF waits forever).
    public struct Acquire: AMLConvertible, Hashable {
        /// The mutex.
        public let mutex: NameString
        /// The timeout in milliseconds.
        public let timeout: UInt16

        /// Acquires `mutex`, waiting up to `timeout` milliseconds.
        public init(_ mutex: NameString, timeout: UInt16 = 0xffff) {
            self.mutex = mutex
            self.timeout = timeout
        }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes += [AMLOpcode.extendedPrefix, AMLOpcode.acquire]
            mutex.appendAML(to: &bytes)
            bytes.appendLittleEndian(timeout)
        }
    }

    /// `Release(mutex)`: 0x5B 0x27 and the mutex.
    public struct Release: AMLConvertible, Hashable {
        /// The mutex.
        public let mutex: NameString

        /// Releases `mutex`.
        public init(_ mutex: NameString) { self.mutex = mutex }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes += [AMLOpcode.extendedPrefix, AMLOpcode.release]
            mutex.appendAML(to: &bytes)
        }
    }

    /// A two-operand integer operation with an optional target: the opcode, both operands,
    /// then the target or NullName (0x00) when the result is only returned.
    public struct Arithmetic: AMLConvertible {
        /// The operator and its opcode.
        public enum Operator: UInt8, Hashable, Sendable {
            /// `Add` (0x72).
            case add = 0x72
            /// `Subtract` (0x74).
            case subtract = 0x74
            /// `Multiply` (0x77).
            case multiply = 0x77
            /// `ShiftLeft` (0x79).
            case shiftLeft = 0x79
            /// `ShiftRight` (0x7A).
            case shiftRight = 0x7a
            /// `And` (0x7B).
            case and = 0x7b
            /// `Nand` (0x7C).
            case nand = 0x7c
            /// `Or` (0x7D).
            case or = 0x7d
            /// `Nor` (0x7E).
            case nor = 0x7e
            /// `Xor` (0x7F).
            case xor = 0x7f
        }

        /// The operator.
        public let operation: Operator
        /// The left operand.
        public let lhs: any AMLConvertible
        /// The right operand.
        public let rhs: any AMLConvertible
        /// Where the result is stored (`nil`: nowhere, NullName).
        public let target: (any AMLConvertible)?

        /// `operation(lhs, rhs, target)`.
        public init(_ operation: Operator, _ lhs: any AMLConvertible, _ rhs: any AMLConvertible,
                    into target: (any AMLConvertible)? = nil) {
            self.operation = operation
            self.lhs = lhs
            self.rhs = rhs
            self.target = target
        }

        /// Appends the expression.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(operation.rawValue)
            lhs.appendAML(to: &bytes)
            rhs.appendAML(to: &bytes)
            if let target { target.appendAML(to: &bytes) } else { bytes.append(0x00) }
        }
    }

    /// `Increment(x)` (0x75) or `Decrement(x)` (0x76) of a local, argument or named object.
    public struct Step: AMLConvertible {
        /// Whether the value goes up (`Increment`) or down (`Decrement`).
        public let increments: Bool
        /// The variable.
        public let variable: any AMLConvertible

        /// `Increment(variable)` when `increments`, else `Decrement(variable)`.
        public init(increments: Bool, _ variable: any AMLConvertible) {
            self.increments = increments
            self.variable = variable
        }

        /// Appends the statement.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(increments ? AMLOpcode.increment : AMLOpcode.decrement)
            variable.appendAML(to: &bytes)
        }
    }

    /// A logical comparison of two integers, giving `Ones` or `Zero`: `LEqual` (0x93),
    /// `LGreater` (0x94), `LLess` (0x95), and their negations encoded as `LNot` (0x92)
    /// followed by the opposite comparison (`LNotEqual` is `92 93`, `LGreaterEqual` is
    /// `92 95`, `LLessEqual` is `92 94`).
    public struct Comparison: AMLConvertible {
        /// The comparison.
        public enum Operator: Hashable, Sendable {
            /// `LEqual`.
            case equal
            /// `LNotEqual`.
            case notEqual
            /// `LLess`.
            case less
            /// `LLessEqual`.
            case lessOrEqual
            /// `LGreater`.
            case greater
            /// `LGreaterEqual`.
            case greaterOrEqual

            /// The opcode bytes.
            var opcodes: [UInt8] {
                switch self {
                case .equal: [AMLOpcode.logicalEqual]
                case .notEqual: [AMLOpcode.logicalNot, AMLOpcode.logicalEqual]
                case .less: [AMLOpcode.logicalLess]
                case .lessOrEqual: [AMLOpcode.logicalNot, AMLOpcode.logicalGreater]
                case .greater: [AMLOpcode.logicalGreater]
                case .greaterOrEqual: [AMLOpcode.logicalNot, AMLOpcode.logicalLess]
                }
            }
        }

        /// The comparison.
        public let operation: Operator
        /// The left operand.
        public let lhs: any AMLConvertible
        /// The right operand.
        public let rhs: any AMLConvertible

        /// Compares `lhs` with `rhs`.
        public init(_ operation: Operator, _ lhs: any AMLConvertible, _ rhs: any AMLConvertible) {
            self.operation = operation
            self.lhs = lhs
            self.rhs = rhs
        }

        /// Appends the expression.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes += operation.opcodes
            lhs.appendAML(to: &bytes)
            rhs.appendAML(to: &bytes)
        }
    }

    /// `LAnd` (0x90) or `LOr` (0x91) of two conditions.
    public struct Logical: AMLConvertible {
        /// Whether both (`LAnd`) or either (`LOr`) must hold.
        public let requiresBoth: Bool
        /// The left condition.
        public let lhs: any AMLConvertible
        /// The right condition.
        public let rhs: any AMLConvertible

        /// `LAnd(lhs, rhs)` when `requiresBoth`, else `LOr(lhs, rhs)`.
        public init(requiresBoth: Bool, _ lhs: any AMLConvertible, _ rhs: any AMLConvertible) {
            self.requiresBoth = requiresBoth
            self.lhs = lhs
            self.rhs = rhs
        }

        /// Appends the expression.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(requiresBoth ? AMLOpcode.logicalAnd : AMLOpcode.logicalOr)
            lhs.appendAML(to: &bytes)
            rhs.appendAML(to: &bytes)
        }
    }

    /// `LNot(condition)` (0x92).
    public struct LogicalNot: AMLConvertible {
        /// The condition negated.
        public let operand: any AMLConvertible

        /// Negates `operand`.
        public init(_ operand: any AMLConvertible) { self.operand = operand }

        /// Appends the expression.
        public func appendAML(to bytes: inout [UInt8]) {
            bytes.append(AMLOpcode.logicalNot)
            operand.appendAML(to: &bytes)
        }
    }
}

extension AML {
    /// `Add(lhs, rhs, target)`.
    public static func add(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible, into target: (any AMLConvertible)? = nil) -> Arithmetic {
        Arithmetic(.add, lhs, rhs, into: target)
    }

    /// `Subtract(lhs, rhs, target)`.
    public static func subtract(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible, into target: (any AMLConvertible)? = nil) -> Arithmetic {
        Arithmetic(.subtract, lhs, rhs, into: target)
    }

    /// `And(lhs, rhs, target)`.
    public static func and(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible, into target: (any AMLConvertible)? = nil) -> Arithmetic {
        Arithmetic(.and, lhs, rhs, into: target)
    }

    /// `Or(lhs, rhs, target)`.
    public static func or(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible, into target: (any AMLConvertible)? = nil) -> Arithmetic {
        Arithmetic(.or, lhs, rhs, into: target)
    }

    /// `ShiftLeft(lhs, rhs, target)`.
    public static func shiftLeft(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible, into target: (any AMLConvertible)? = nil) -> Arithmetic {
        Arithmetic(.shiftLeft, lhs, rhs, into: target)
    }

    /// `LEqual(lhs, rhs)`.
    public static func equal(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible) -> Comparison {
        Comparison(.equal, lhs, rhs)
    }

    /// `LLess(lhs, rhs)`.
    public static func less(_ lhs: any AMLConvertible, _ rhs: any AMLConvertible) -> Comparison {
        Comparison(.less, lhs, rhs)
    }

    /// `Increment(variable)`.
    public static func increment(_ variable: any AMLConvertible) -> Step { Step(increments: true, variable) }
}
