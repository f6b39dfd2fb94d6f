package main

import (
	"fmt"
	"image/color"
	"math"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// palette colours the systems, in the order they appear.
var palette = []color.Color{
	color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff},
	color.RGBA{0x2c, 0xa0, 0x2c, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff},
	color.RGBA{0x94, 0x67, 0xbd, 0xff}, color.RGBA{0x8c, 0x56, 0x4b, 0xff},
}

// writeChart draws IOPS and p99 latency per workload and system, medians,
// into path as a PNG: two bar charts, one above the other.
func writeChart(r *Results, path string) error {
	workloads, systems := r.Params.Workloads, r.Params.Systems
	iops, err := barChart(r, workloads, systems, "IOPS (median)", func(s Summary) float64 { return s.IOPS })
	if err != nil {
		return err
	}
	p99, err := barChart(r, workloads, systems, "p99 latency, us (median)", func(s Summary) float64 { return s.P99us })
	if err != nil {
		return err
	}
	img := vgimg.New(vg.Length(260+70*len(workloads)*len(systems)/2)*vg.Millimeter/3, 200*vg.Millimeter)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align([][]*plot.Plot{{iops}, {p99}}, tiles, dc)
	iops.Draw(canvases[0][0])
	p99.Draw(canvases[1][0])
	w, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	defer w.Close()
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(w); err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	return nil
}

// barChart groups one bar per system under each workload.
func barChart(r *Results, workloads, systems []string, title string, value func(Summary) float64) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title + ", log scale"
	p.Y.Label.Text = title
	p.Y.Scale = floorLog{} // IOPS and latencies span three decades
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.NominalX(workloads...)
	width := vg.Points(float64(60) / float64(len(systems)))
	for i, sys := range systems {
		vals := make(plotter.Values, len(workloads))
		for j, w := range workloads {
			for _, c := range r.Cells {
				if c.Workload == w && c.System == sys && c.Good > 0 {
					vals[j] = value(c.Median)
				}
			}
			if vals[j] < 1 {
				vals[j] = 1 // no result: the floor of the log scale
			}
		}
		bars, err := plotter.NewBarChart(vals, width)
		if err != nil {
			return nil, fmt.Errorf("bench: chart: %w", err)
		}
		bars.LineStyle.Width = 0
		bars.Color = palette[i%len(palette)]
		bars.Offset = vg.Length(float64(i)-float64(len(systems)-1)/2) * width
		p.Add(bars)
		p.Legend.Add(sys, bars)
	}
	p.Y.Min = 1 // bars stand on 0, which a log scale cannot show
	return p, nil
}

// floorLog is a log scale on which a bar's base at 0 sits at the axis
// minimum instead of being refused.
type floorLog struct{}

func (floorLog) Normalize(min, max, x float64) float64 {
	return plot.LogScale{}.Normalize(min, max, math.Max(x, min))
}
