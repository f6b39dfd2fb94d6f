package checker

import "github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"

// NBD adapts an nbdclient.Client to Device.
type NBD struct{ *nbdclient.Client }

// WriteFUA writes p at off, with NBD_CMD_FLAG_FUA when fua is set.
func (n NBD) WriteFUA(p []byte, off int64, fua bool) error {
	var flags nbdclient.CmdFlags
	if fua {
		flags = nbdclient.FlagFUA
	}
	_, err := n.Client.WriteAt(p, off, flags)
	return err
}
