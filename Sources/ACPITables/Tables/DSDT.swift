/// The Differentiated System Description Table: the header followed by an AML definition
/// block. Revision 6, as Cloud Hypervisor (integers are 64 bits wide from revision 2).
public struct DSDT: ACPITable {
    /// The objects of the definition block, in order.
    public var definitions: [any AMLConvertible]
    /// The OEM and creator fields.
    public var identity: ACPIIdentity

    /// A DSDT holding `definitions`.
    public init(_ definitions: [any AMLConvertible], identity: ACPIIdentity = .cloudHypervisor) {
        self.definitions = definitions
        self.identity = identity
    }

    /// The table: header (`"CHDSDT"`) and the encoded definitions.
    public func makeSDT() -> SDT {
        var table = SDT("DSDT", revision: 6, oemTableID: "CHDSDT", identity: identity)
        for definition in definitions { table.append(aml: definition) }
        return table
    }
}
