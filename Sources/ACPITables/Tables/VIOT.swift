/// The Virtual I/O Translation table, which tells the guest which PCI functions sit behind
/// a paravirtualised IOMMU, as Cloud Hypervisor builds it (`create_viot_table`): after the
/// header, the node count, the offset of the first node (48) and 8 reserved bytes; one
/// virtio-pci IOMMU node (type 3, 16 bytes: segment and BDF of the virtio-iommu function);
/// then one PCI range node (type 1, 24 bytes) per endpoint, covering exactly that function
/// and naming the IOMMU node as its output. Revision 0, OEM table ID `"CHVIOT"`, OEM
/// revision 0.
public struct VIOT: ACPITable, Hashable {
    /// A PCI function: its segment and its 16-bit bus/device/function number.
    public struct Function: Hashable, Sendable {
        /// The PCI segment group.
        public var segment: UInt16
        /// `bus << 8 | device << 3 | function`.
        public var bdf: UInt16

        /// The function at `segment`, `bdf`.
        public init(segment: UInt16, bdf: UInt16) {
            self.segment = segment
            self.bdf = bdf
        }

        /// The endpoint id the virtio-iommu knows it by: `segment << 16 | bdf`.
        public var endpointID: UInt32 { UInt32(segment) << 16 | UInt32(bdf) }
    }

    /// Offset of the first node (the virtio-pci IOMMU node) from the table's start.
    public static let firstNodeOffset: UInt16 = 48

    /// The virtio-iommu's PCI function.
    public var iommu: Function
    /// The functions behind it, one PCI range node each, in this order.
    public var endpoints: [Function]
    /// The OEM and creator fields (the OEM revision is written as 0, as Cloud Hypervisor's).
    public var identity: ACPIIdentity

    /// A table for `iommu` and the `endpoints` behind it.
    public init(iommu: Function, endpoints: [Function], identity: ACPIIdentity = .cloudHypervisor) {
        self.iommu = iommu
        self.endpoints = endpoints
        self.identity = identity
    }

    /// The table bytes.
    public func makeSDT() -> SDT {
        var table = SDT("VIOT", revision: 0, oemTableID: "CHVIOT", identity: identity)
        table.write(UInt32(0), at: SDT.oemRevisionOffset)
        table.append(UInt16(truncatingIfNeeded: endpoints.count + 1))
        table.append(Self.firstNodeOffset)
        table.append(UInt64(0))
        // The virtio-pci IOMMU node.
        table.append(UInt8(3))
        table.append(UInt8(0))
        table.append(UInt16(16))
        table.append(iommu.segment)
        table.append(iommu.bdf)
        table.append(UInt64(0))
        for endpoint in endpoints {
            table.append(UInt8(1))
            table.append(UInt8(0))
            table.append(UInt16(24))
            table.append(endpoint.endpointID)
            table.append(endpoint.segment)
            table.append(endpoint.segment)
            table.append(endpoint.bdf)
            table.append(endpoint.bdf)
            table.append(Self.firstNodeOffset)
            table.append(bytes: [UInt8](repeating: 0, count: 6))
        }
        return table
    }
}
